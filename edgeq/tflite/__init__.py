"""TFLite internals in one place: what edgeq reads from and writes into flatbuffers, and what the LiteRT
runtime does with them. (Being moved here module by module; see docs and house notes.)"""
