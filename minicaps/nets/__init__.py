"""Networks over one params dict: the shared base (network.py), CapsNet (capsnet.py), the
CNN baseline with pooling (cnn.py), and the registry of kinds checkpoints name (kinds.py)."""
