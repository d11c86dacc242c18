#!/bin/sh
# Gives the API an identity limited to reading and writing objects of
# rgrid's bucket (a part of a multipart upload is a PUT; creating, completing
# and aborting uploads stay with the API's own identity), which signs every
# presigned URL: no URL carries MinIO's root identity, and a leaked one
# cannot even list what others stored. Run once per MinIO
# (docker-compose's minio-setup, cloud-init's control server); safe to
# run again.
#
# Needs `mc`, and MINIO_URL, MINIO_ROOT_USER, MINIO_ROOT_PASSWORD,
# RGRID_S3_BUCKET, RGRID_S3_PRESIGN_ACCESS_KEY, RGRID_S3_PRESIGN_SECRET_KEY.
set -eu
until mc alias set rgrid "$MINIO_URL" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null 2>&1; do
  sleep 1
done
mc mb --ignore-existing "rgrid/$RGRID_S3_BUCKET"
policy=$(mktemp)
cat > "$policy" <<JSON
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow",
   "Action": ["s3:GetObject", "s3:PutObject"],
   "Resource": ["arn:aws:s3:::$RGRID_S3_BUCKET/*"]}
]}
JSON
mc admin policy create rgrid rgrid-presign "$policy"
rm -f "$policy"
mc admin user add rgrid "$RGRID_S3_PRESIGN_ACCESS_KEY" "$RGRID_S3_PRESIGN_SECRET_KEY"
mc admin policy attach rgrid rgrid-presign --user "$RGRID_S3_PRESIGN_ACCESS_KEY" 2>/dev/null \
  || mc admin user info rgrid "$RGRID_S3_PRESIGN_ACCESS_KEY" | grep -q rgrid-presign
