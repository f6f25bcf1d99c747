"""The mesh for other tools: values for the OpenBao Helm chart, an Ansible inventory and playbook. Pure renders of
the spec; ``cli/export.py`` writes them."""
