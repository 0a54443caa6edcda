"""A pycaffe fine-tuning loop written as OpenSALICON's finetune_salicon.py works:
caffe.SGDSolver(solver), solver.net.copy_from(weights), the input blobs
written for every image, solver.step(1), solver.net.save(...).

    python finetune.py SOLVER WEIGHTS STEPS OUT.caffemodel OUT.npz
"""
import sys

import caffe
import numpy as np

solver_path, weights, steps, out_model, out = sys.argv[1:6]
caffe.set_mode_cpu()
solver = caffe.SGDSolver(solver_path)
solver.net.copy_from(weights)
rng = np.random.RandomState(7)
losses = []
for _step in range(int(steps)):
    for name in ("fine_scale", "coarse_scale"):
        blob = solver.net.blobs[name]
        blob.data[...] = rng.uniform(-0.5, 0.5, blob.data.shape)
    target = solver.net.blobs["ground_truth"]
    target.data[...] = rng.uniform(0.0, 1.0, target.data.shape)
    solver.step(1)
    losses.append(float(solver.net.blobs["loss"].data))
solver.net.save(out_model)
np.savez(out, losses=np.array(losses), iter=solver.iter,
         frozen=solver.net.params["conv1_1"][0].data.copy(), trained=solver.net.params["saliency_map"][0].data.copy())
