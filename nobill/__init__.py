"""NOBill: multi-tenant, Stripe-backed billing platform service."""

import os as _os

# NOTE: generated code is kept in gen/nobill/v1 (one command regenerates it) and is
# imported as nobill.v1. A built wheel places it at nobill/v1; in a source checkout
# (editable install, tests) the package path is extended to reach gen/.
_generated = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "gen", "nobill")
if _os.path.isdir(_generated) and _generated not in __path__:
    __path__.append(_generated)

__version__ = "0.1.0"
