"""Built-in workflow templates (JSON data files in ``templates/``)."""
