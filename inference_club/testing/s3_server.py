"""A real S3 server for tests: ``moto_server`` (moto[server]) as a process on a free port."""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from inference_club.store.s3store import S3Config, S3FileStore
from inference_club.testing.servers import ProcessHandle, free_port

MOTO_SERVER = str(Path(sys.executable).parent / "moto_server")
# Without signature checks moto accepts any credentials; these only have to be well-formed.
ACCESS_KEY_ID = "testing-access-key"
SECRET_ACCESS_KEY = "testing-secret-key"
REGION = "us-east-1"


@dataclass
class S3Server:
    handle: ProcessHandle
    endpoint: str
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY

    def config(self, bucket: str, prefix: str = "") -> S3Config:
        return S3Config(self.endpoint, bucket, REGION, self.access_key_id, self.secret_access_key, prefix)

    def env(self, bucket: str, prefix: str = "", *, presigned: bool = False) -> dict[str, str]:
        """``IC_S3_*`` variables of a hub process storing its files in ``bucket``."""
        return {
            "IC_S3_ENDPOINT": self.endpoint,
            "IC_S3_BUCKET": bucket,
            "IC_S3_REGION": REGION,
            "IC_S3_ACCESS_KEY_ID": self.access_key_id,
            "IC_S3_SECRET_ACCESS_KEY": self.secret_access_key,
            "IC_S3_PREFIX": prefix,
            "IC_S3_PRESIGNED_DOWNLOADS": "true" if presigned else "false",
        }

    async def create_bucket(self, bucket: str) -> None:
        async with httpx.AsyncClient() as http:
            await S3FileStore(http, self.config(bucket)).ensure_bucket()

    def object_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in the bucket (ListObjectsV2, unsigned: moto does not check)."""
        answer = httpx.get(
            f"{self.endpoint}/{bucket}", params={"list-type": "2", "prefix": prefix}, timeout=10
        )
        answer.raise_for_status()
        root = ElementTree.fromstring(answer.content)
        return [node.text or "" for node in root.iter() if node.tag.rsplit("}", 1)[-1] == "Key"]


def start_s3_server(tmp: Path, port: int | None = None, *, verify_signatures: bool = False) -> S3Server:
    """moto on a free port. ``verify_signatures``: moto checks every request's SigV4
    signature against an IAM user it creates here (moto cannot check presigned URLs then)."""
    port = port or free_port()
    # moto lets this many requests through unchecked: the three that create the IAM user.
    env = {"INITIAL_NO_AUTH_ACTION_COUNT": "3"} if verify_signatures else {}
    handle = ProcessHandle(
        [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)], tmp / f"moto-{port}.log", env=env
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        handle.wait_http(f"{endpoint}/moto-api/", timeout=60)
        server = S3Server(handle, endpoint)
        if verify_signatures:
            server.access_key_id, server.secret_access_key = _iam_user(endpoint)
    except BaseException:
        handle.stop()
        raise
    return server


def _iam_user(endpoint: str) -> tuple[str, str]:
    """Create an IAM user allowed every S3 action; its access key id and secret."""

    def call(params: dict[str, str]) -> str:
        body = urlencode({**params, "Version": "2010-05-08"})
        request = AWSRequest(
            method="POST",
            url=f"{endpoint}/",
            data=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY), "iam", REGION).add_auth(request)
        answer = httpx.post(f"{endpoint}/", content=body, headers=dict(request.headers.items()), timeout=30)
        answer.raise_for_status()
        return answer.text

    call({"Action": "CreateUser", "UserName": "hub"})
    created = call({"Action": "CreateAccessKey", "UserName": "hub"})
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    call(
        {
            "Action": "PutUserPolicy",
            "UserName": "hub",
            "PolicyName": "files",
            "PolicyDocument": json.dumps(policy),
        }
    )
    key_id = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", created)
    secret = re.search(r"<SecretAccessKey>([^<]+)</SecretAccessKey>", created)
    if key_id is None or secret is None:
        raise RuntimeError(f"moto did not create an access key: {created[:300]}")
    return key_id.group(1), secret.group(1)
