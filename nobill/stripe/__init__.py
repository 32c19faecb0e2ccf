"""Everything that talks to Stripe: the ONLY package that imports `stripe`."""
