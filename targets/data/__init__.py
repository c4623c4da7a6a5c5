"""Data sources (`data=`), one module each, built by `_target_`: the embedded digits, torchvision's MNIST,
Fashion-MNIST and CIFAR-10 from a local folder, and the user's own images (`image_folder`) or arrays (`npz`)."""
