"""`python -m imgcls` (the form torchrun launches) runs the CLI."""

from imgcls.cli import main

if __name__ == "__main__":
    main()
