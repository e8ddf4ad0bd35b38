"""The former name of `beit_build.scripts.imagenet_labels`, which writes the 1k list beside the 22k one."""

from beit_build.scripts.imagenet_labels import main

if __name__ == "__main__":
    main()
