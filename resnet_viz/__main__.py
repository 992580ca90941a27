"""``python -m resnet_viz``: the same entry as the ``resnet-viz`` command."""

from resnet_viz.cli.main import console

if __name__ == "__main__":
    console()
