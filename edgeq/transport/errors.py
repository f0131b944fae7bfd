"""Device errors; they live in :mod:`edgeq.errors` (one hierarchy), re-exported here for old imports."""
from __future__ import annotations

from edgeq.errors import (DeviceError, DeviceLost, DeviceMissing, DeviceTimeout, DeviceUnauthorized, HostKeyError,
                          RemoteCommandFailed)

__all__ = ["DeviceError", "DeviceLost", "DeviceMissing", "DeviceTimeout", "DeviceUnauthorized", "HostKeyError",
           "RemoteCommandFailed"]
