"""Reaching devices: ``adb.AdbRemote`` (Android, Debian's/Google's ``adb`` client) and ``ssh.SshRemote``
(Linux boards, the system OpenSSH client). Both offer the same small ``Remote`` interface so the benchmark
flows never care which one they talk to. Every remote command is a string built with ``shlex.quote``."""
