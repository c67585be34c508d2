"""Many runs: seeds, sweeps, and reading run folders back."""
