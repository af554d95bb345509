"""``python -m azureml_chat`` runs the ``azureml-chat`` command."""

from .cli import main

raise SystemExit(main())
