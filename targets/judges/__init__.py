"""Judge sources (`target=`), one module each, built by `_target_`: judges gavel trains (`trained`), and the user's
own, from a file or a registry (`torchscript`, `state_dict`, `onnx`, `mlflow`)."""
