"""Device faults, each one line naming the device and what to do (exit code 2 in the CLI)."""
from __future__ import annotations

from edgeq.errors import EdgeqError


class DeviceError(EdgeqError):
    """A device that cannot be used: missing, unauthorized, dropped, timed out, or a bad host key."""


class DeviceMissing(DeviceError):
    """Nothing answers at the device's address / serial."""


class DeviceUnauthorized(DeviceError):
    """The device refuses us: adb not authorized, or no ssh key it accepts."""


class HostKeyError(DeviceError):
    """The ssh host key is unknown or differs from known_hosts."""


class DeviceLost(DeviceError):
    """The device went away in the middle of a run."""


class DeviceTimeout(DeviceError):
    """A command on the device did not finish in time."""


class RemoteCommandFailed(DeviceError):
    """A command on the device ran and failed (exit code != 0)."""
