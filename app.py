"""The vae-augment demo: see what a VAE augmentation does to an image before training with it.

    pip install -e '.[app]' && python app.py       # http://127.0.0.1:7860, offline

The app itself is `vae_augment.app` (installed with the package; `vae-augment demo` serves it too).
"""

if __name__ == "__main__":
    from vae_augment.app import main

    main()
