"""The dynamo exporter's operator registry, made once per export batch.

Standalone like the export scripts that import it by plain name from their own folder
(``torch_export_script.py``, ``hf_export_script.py``): the standard library only, after the
script has imported torch. Every ``torch.onnx.export(..., dynamo=True)`` call builds the
registry of ATen decompositions from torchlib anew (0.1-0.4 s each); the export only reads it
(``get_decomps``) as long as no custom translation table is passed, and the scripts pass none.
So the first registry made for an opset serves the batch's later exports for that opset: the
models are byte for byte the ones a fresh registry makes.
"""


def reuse_torchlib_registry():
    """Make ``ONNXRegistry.from_torchlib`` return the registry it made before for the same
    arguments; False (torch left as it is) when that class is not where torch 2.5-2.13 keep
    it."""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        return False
    registry_class = getattr(_registration, "ONNXRegistry", None)
    made_by = getattr(registry_class, "from_torchlib", None)
    if made_by is None or getattr(made_by, "reused", False):
        return made_by is not None
    made = {}

    def from_torchlib(cls, *args, **kwargs):
        key = (cls, args, tuple(sorted(kwargs.items())))
        try:
            hash(key)
        except TypeError:  # arguments of another torch's making: no reuse
            return made_by.__func__(cls, *args, **kwargs)
        if key not in made:
            made[key] = made_by.__func__(cls, *args, **kwargs)
        return made[key]

    from_torchlib.reused = True
    registry_class.from_torchlib = classmethod(from_torchlib)
    return True
