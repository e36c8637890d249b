// Spikes packed into words across invocations: each 32 consecutive invocations of a
// workgroup own one u32 word (bit = lid % 32), OR-ed together in workgroup memory. The
// includer calls `words_clear(lid)` once and `words_end_step(lid)` after each step, both in
// uniform control flow (they hold the barriers), and `word_or(lid)` for a spike anywhere.

var<workgroup> spike_words: array<atomic<u32>, WG / 32u>;

fn words_clear(lid: u32) {
    if (lid < WG / 32u) {
        atomicStore(&spike_words[lid], 0u);
    }
    workgroupBarrier();
}

fn word_or(lid: u32) {
    atomicOr(&spike_words[lid / 32u], 1u << (lid % 32u));
}

// Ends a step: after every word_or of the step, hands each word to its first lane (the
// others get 0) and clears it for the next step.
fn words_end_step(lid: u32) -> u32 {
    workgroupBarrier();
    var word = 0u;
    if (lid % 32u == 0u) {
        word = atomicExchange(&spike_words[lid / 32u], 0u);
    }
    workgroupBarrier();
    return word;
}
