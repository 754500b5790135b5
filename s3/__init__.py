"""shoal.s3: an S3-compatible HTTP gateway in front of a Shoal cluster (`shoal-s3`).

Clients that speak S3 (boto3, the AWS CLI, rclone, ...) talk to it with SigV4-signed HTTP;
it talks to the cluster only through the async SDK (`shoal.client.AsyncClient`), streaming
bodies into and out of erasure-coded stripes. Modules: config (settings), credentials
(users), sigv4 (signatures), body and checksums (request bodies), xml and errors (documents),
gateway (shared state), app (routing), buckets, objects, listing and multipart (operations),
main (the daemon).
"""
