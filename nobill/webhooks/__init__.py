"""The Stripe webhook sidecar (`nobill webhooks`)."""
