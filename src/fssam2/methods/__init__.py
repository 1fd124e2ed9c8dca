"""Few-shot methods on SAM2, one module each, behind one interface (`FewShotMethod`, in base.py).

The LightningModule takes the method by class path (`model.method`, default
`fssam2.methods.FewShotSAM2`); a method's own options are given beside it in `model`.
"""

import importlib

from fssam2.errors import InputError
from fssam2.methods.adaptformer import AdapterConfig
from fssam2.methods.base import FewShotMethod
from fssam2.methods.fssam2 import FewShotSAM2
from fssam2.methods.gfsam import GFSAM
from fssam2.methods.sansa import SANSA

__all__ = ["DEFAULT_METHOD", "GFSAM", "SANSA", "AdapterConfig", "FewShotMethod", "FewShotSAM2", "method_class"]

DEFAULT_METHOD = "fssam2.methods.FewShotSAM2"


def method_class(path: str, option: str = "model.method") -> type[FewShotMethod]:
    """The method class a class path (`model.method`) names; an InputError naming `option` says the
    fix, and the class meant when the path's last part (or a bare name such as `gfsam`) differs from
    a method's name by letter case alone."""
    module_name, _, name = str(path).rpartition(".")
    try:
        module = importlib.import_module(module_name) if module_name else None
    except ImportError:
        module = None
    found = getattr(module, name, None)
    if isinstance(found, type) and issubclass(found, FewShotMethod):
        return found
    spaces = {module_name: vars(module)} if module is not None else {}
    spaces.setdefault(__name__, globals())  # then fssam2's own methods: a bare name, or one in the wrong module
    meant = next(
        (
            f"did you mean {where}.{n}? "
            for where, names in spaces.items()
            for n, v in names.items()
            if isinstance(v, type) and issubclass(v, FewShotMethod) and n.lower() == name.lower()
        ),
        "",
    )
    raise InputError(
        f"{option}={path} is not a few-shot method class: {meant}give a class path such as {DEFAULT_METHOD} "
        "(a subclass of fssam2.methods.FewShotMethod)."
    )
