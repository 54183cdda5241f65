"""Uploaded bytes to tensors and logits to answers: the gate before Pillow, decoding and each entry's
preprocessing, the answers. Shared with export/ and bench/."""
