"""The ``mfclip`` command line: a thin layer over the Python API, one module per command group."""

#: ``--face-detect`` of the scoring commands (predict, serve, explain).
FACE_DETECT_HELP = (
    "Face crop before scoring: auto (cut as the model's training faces were; none for a model trained on "
    "uncropped images), off, mtcnn or haar."
)
