"""The zoo: a conformance suite of real pretrained models from PyPI wheels (issue 13); see docs/zoo.md."""
