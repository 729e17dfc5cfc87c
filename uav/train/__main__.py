"""``python -m uav.train unet|vae ...`` — the entry ``accelerate launch -m uav.train`` runs."""

from uav.cli.train import main

if __name__ == "__main__":
    main()
