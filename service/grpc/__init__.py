"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), beside REST's `/v2`."""
