"""Figure functions: tidy tables in, matplotlib figures out, saved with a caption sidecar."""
