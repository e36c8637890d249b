"""The exceptions spikescan raises. Every one is a `spikescan.Error`, and its message is the
one the `spikescan` command line prints for the same problem (without the `spikescan: `
prefix): it names the file, key or argument at fault."""


class Error(Exception):
    """Anything spikescan reports: a bad model directory, checkpoint or input, or a GPU error."""


class ModelNotFoundError(Error, FileNotFoundError):
    """The model directory (or .pth checkpoint) does not exist."""


class HubError(Error):
    """A model by Hub id (`owner/name[@revision]`) could not be fetched: the Hub unreachable,
    a missing file or token, a corrupt download, a repository without safetensors weights.
    A repository or revision that does not exist, or one not cached with HF_HUB_OFFLINE=1,
    raises ModelNotFoundError instead."""


class ConfigError(Error):
    """config.json is missing, malformed, names an unknown architecture or a bad field."""


class CheckpointError(Error):
    """model.safetensors (or an input safetensors file) is unreadable, lacks a key or has a
    tensor of the wrong shape or dtype; or a .pth checkpoint does not convert."""


class InputError(Error, ValueError):
    """An input the model cannot take: wrong shape, out-of-range token id, undecodable
    image, missing input file, wrong call for this architecture."""


class DTypeError(InputError, TypeError):
    """An input array of the wrong dtype (images and features are float32, token ids integers)."""


class DeviceError(Error):
    """No GPU adapter, out of GPU memory, a buffer over the device's limits, a GPU timeout."""


class InternalError(Error):
    """A bug in spikescan (an internal panic, caught before it reached Python): please report it."""
