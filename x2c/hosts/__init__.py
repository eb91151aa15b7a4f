"""Compute hosts: a filesystem plus a command Runner, over SSH or on this machine.

Only this package imports asyncssh and sshfs; it hands back x2c types and x2c errors.
"""

from x2c.hosts.base import Completed, Runner
from x2c.hosts.host import Host, LocalHost, open_host
from x2c.hosts.local import LocalRunner

__all__ = ["Completed", "Host", "LocalHost", "LocalRunner", "Runner", "open_host"]
