"""The Stripe sandbox: a stateful, Stripe-compatible server for offline development,
tests and fault injection (see README.md in this directory).

    from nobill.sandbox.server import start_sandbox

Only tests and `nobill dev` depend on this package; it never imports `stripe`.
"""
