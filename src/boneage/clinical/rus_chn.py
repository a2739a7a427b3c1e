"""The RUS-CHN (China-05) scoring of bone maturity for the clinical layer: :mod:`boneage.data.rus_chn`
(the tables sit below the models, whose RUS-CHN pipeline scores its stages with them)."""

from ..data.rus_chn import *  # noqa: F403
from ..data.rus_chn import __all__  # noqa: F401
