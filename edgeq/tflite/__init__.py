"""TFLite internals in one place: what edgeq reads from and writes into flatbuffers (verify, transforms),
and what the LiteRT runtime does with them (xnnpack). Being moved here module by module."""
