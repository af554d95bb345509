"""``python -m azureml_chat.cli`` runs the ``azureml-chat`` command, as ``python -m azureml_chat`` does."""

from ._main import main

raise SystemExit(main())
