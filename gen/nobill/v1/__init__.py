"""Generated from protos/nobill/v1 by scripts/gen_protos.py. Do not edit."""
