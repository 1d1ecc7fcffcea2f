"""``python -m mmrl_harness`` (and so ``accelerate launch -m mmrl_harness``) runs the CLI."""

from mmrl_harness.entry import main

if __name__ == "__main__":
    main()
