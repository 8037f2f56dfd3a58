"""Feature extractors: eGeMAPS audio descriptors, facial landmarks, captions/ASR text embeddings."""
