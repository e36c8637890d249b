//! Model graphs for spikescan, each assembled from runtime ops. Filled in by the model issues.
