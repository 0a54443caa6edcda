"""Installs the ``salicon`` package, the ``salicon`` command, the Caffe Python
layer modules of layers/ (as top-level modules, so Caffe finds them) and the
prototxt files of prototxt/ (as package data ``salicon.prototxt``)."""
from setuptools import setup

setup(
    packages=["salicon", "salicon.engine", "salicon.proto", "salicon.prototxt"],
    package_dir={"salicon": "salicon", "salicon.prototxt": "prototxt", "": "layers"},
    package_data={"salicon.prototxt": ["*.prototxt"], "salicon.proto": ["caffe.proto"]},
    py_modules=["CustomData", "custom_interpolation_layer"],
)
