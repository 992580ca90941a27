import logging
import os
import sys

from resnet_viz.cli.main import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
    # A torchrun rank whose work is done (process group destroyed, run folder closed) leaves
    # without the interpreter's teardown: there, C++ objects of the gloo backend that are
    # freed late can destroy a still-running std::thread and abort the process ("terminate
    # called without an active exception", seen once in CI after a finished run), which
    # makes torchrun report the whole run as failed. Flush what Python would have flushed.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
