"""The lab: local hosts on one machine, each a network namespace with its own address, sshd and supervisor, to try
and test the multi-host (``runtime: ssh``) runtime without other machines."""

from vaultmesh.lab.hosts import cut, lab_down, lab_up, load, mend, unavailable
from vaultmesh.lab.plan import LabHost, LabRecord

__all__ = ["LabHost", "LabRecord", "cut", "lab_down", "lab_up", "load", "mend", "unavailable"]
