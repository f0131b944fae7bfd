"""Device lab for edgeq's on-device benchmark tests: qemu-emulated aarch64 stand-ins of a Raspberry Pi (sshd)
and an Android phone (adbd). ``python -m tests.devicelab up|down|status`` (``make devicelab``)."""
