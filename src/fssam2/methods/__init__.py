"""Few-shot methods on SAM2, one module each, behind one interface (`FewShotMethod`, in base.py).

The LightningModule takes the method by class path (`model.method`, default
`fssam2.methods.FewShotSAM2`); a method's own options are given beside it in `model`.
"""

from fssam2.methods.adaptformer import AdapterConfig
from fssam2.methods.base import FewShotMethod
from fssam2.methods.fssam2 import FewShotSAM2
from fssam2.methods.sansa import SANSA

__all__ = ["SANSA", "AdapterConfig", "FewShotMethod", "FewShotSAM2"]
