#!/usr/bin/env python3
"""Print the total size in bytes (and the object count) of every object under
a prefix of an S3 bucket: the S3 counterpart of `du -sb` for bench/run.sh.

Python 3 standard library only: ListObjectsV2 with AWS Signature V4,
path-style addressing (as Garage and other self-hosted S3 servers use).
Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.

    s3-du.py --endpoint http://127.0.0.1:3900 --bucket trireme --prefix restic/ --region garage
    -> "123456789 4242"   (bytes objects)
"""

import argparse
import datetime
import hashlib
import hmac
import os
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _q(s):
    return urllib.parse.quote(s, safe="-_.~")


def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def list_page(endpoint, bucket, prefix, region, access_key, secret_key, token):
    split = urllib.parse.urlsplit(endpoint)
    host = split.netloc
    path = (split.path.rstrip("/") + "/" + _q(bucket))
    params = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
    if token:
        params["continuation-token"] = token
    query = "&".join("%s=%s" % (_q(k), _q(v)) for k, v in sorted(params.items()))
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(["GET", path, query,
                           "".join("%s:%s\n" % (k, headers[k]) for k in sorted(headers)),
                           signed, payload])
    scope = "%s/%s/s3/aws4_request" % (day, region)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret_key).encode(), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    req = urllib.request.Request(
        "%s://%s%s?%s" % (split.scheme, host, path, query),
        headers={"x-amz-content-sha256": payload, "x-amz-date": amz_date,
                 "Authorization": "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
                 % (access_key, scope, signed, signature)})
    with urllib.request.urlopen(req, timeout=60) as resp:
        root = ET.fromstring(resp.read())
    sizes = [int(c.findtext(NS + "Size")) for c in root.iter(NS + "Contents")]
    truncated = root.findtext(NS + "IsTruncated") == "true"
    return sizes, (root.findtext(NS + "NextContinuationToken") if truncated else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--prefix", default="")
    ap.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    args = ap.parse_args()
    ak = os.environ.get("AWS_ACCESS_KEY_ID")
    sk = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not ak or not sk:
        sys.exit("s3-du: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set")
    total = count = 0
    token = None
    while True:
        sizes, token = list_page(args.endpoint, args.bucket, args.prefix, args.region, ak, sk, token)
        total += sum(sizes)
        count += len(sizes)
        if not token:
            break
    print(total, count)


if __name__ == "__main__":
    main()
