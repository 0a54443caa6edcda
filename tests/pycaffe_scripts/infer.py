"""A pycaffe inference script written as OpenSALICON's Salicon.py works:
caffe.Net(prototxt, weights, caffe.TEST), the image resized and mean-subtracted
into net.blobs[...].data[...], net.forward(), the map read from the output blob.

    python infer.py PROTOTXT WEIGHTS IMAGE OUT.npz    (under real Caffe or python -m salicon.pycaffe)
"""
import sys

import caffe
import numpy as np
import scipy.ndimage
from PIL import Image

prototxt, weights, image_path, out = sys.argv[1:5]
caffe.set_mode_cpu()
net = caffe.Net(prototxt, weights, caffe.TEST)
image = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32)[:, :, ::-1]  # BGR
image = (image - np.array([103.939, 116.779, 123.68], dtype=np.float32)) / 255.0
for name in ("fine_scale", "coarse_scale"):
    _, _, h, w = net.blobs[name].data.shape
    resized = scipy.ndimage.zoom(image, (h / image.shape[0], w / image.shape[1], 1), order=1)
    net.blobs[name].data[...] = resized.transpose(2, 0, 1)[None]
net.forward()
saliency = net.blobs["saliency_map_out"].data[0, 0].copy()
np.savez(out, map=saliency, blobs=np.array(list(net.blobs.keys())), params=np.array(list(net.params.keys())),
         n_param_blobs=np.array([len(v) for v in net.params.values()]),
         conv5=net.blobs["conv5_3"].data.copy(), inputs=np.array(net.inputs), outputs=np.array(net.outputs))
