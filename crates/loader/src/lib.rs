//! Checkpoint loading for spikescan: safetensors + config.json → typed weights under the
//! official key names, with errors that name the key. Filled in by the model issues.
