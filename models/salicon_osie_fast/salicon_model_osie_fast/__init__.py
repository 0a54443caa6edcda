"""The model ``salicon_osie_fast`` for the ``salicon`` package.

This folder holds the model's record (``salicon_osie_fast.json``), its float16
weights, its int8 OpenVINO file and its test net; ``salicon`` finds them
through the entry point group ``salicon.models``. Use it by name:

    from salicon import Salicon
    Salicon("salicon_osie_fast").compute_saliency("photo.jpg")
"""
from pathlib import Path

#: Where the record and its files lie.
FOLDER = Path(__file__).resolve().parent
