"""``python -m resnet_viz`` (and the ``resnet-viz`` command): summary, train, runs, and one
subcommand per experiment, each over the same library functions the app uses."""
