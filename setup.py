"""Installs the ``salicon`` package, the ``salicon`` command, the Caffe Python
layer modules of layers/ (as top-level modules, so Caffe finds them), the
prototxt files of prototxt/ (as package data ``salicon.prototxt``) and the
pretrained model of models/ (as package data ``salicon.models``), the example
images of examples/ (``salicon.examples``) and the web page of ``salicon serve``."""
from setuptools import setup

setup(
    packages=["salicon", "salicon.cli", "salicon.engine", "salicon.runtimes", "salicon.pycaffe", "salicon.proto",
              "salicon.video", "salicon.prototxt", "salicon.models", "salicon.examples"],
    package_dir={"salicon": "salicon", "salicon.prototxt": "prototxt", "salicon.models": "models",
                 "salicon.examples": "examples", "": "layers"},
    package_data={"salicon.prototxt": ["*.prototxt"], "salicon.proto": ["caffe.proto", "caffe_pb2.pyi"],
                  "salicon.models": ["*.safetensors", "*.json", "*_int8.xml", "*_int8.bin"],
                  "salicon.examples": ["*.jpg", "*.md"], "salicon": ["web/*", "py.typed"]},
    py_modules=["CustomData", "custom_interpolation_layer"],
)
