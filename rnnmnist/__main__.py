"""`python -m rnnmnist`: the same program as the `rnnmnist` command (torchrun starts training ranks this way)."""

from rnnmnist.cli.main import main

if __name__ == "__main__":  # guarded: worker processes re-import this module under another name
    main()
