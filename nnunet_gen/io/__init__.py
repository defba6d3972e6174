"""Raw datasets on disk: images with their geometry, dataset folders and names, the provenance manifest, patient-grouped
splits, and the atomic, resumable writer every stage publishes through."""
