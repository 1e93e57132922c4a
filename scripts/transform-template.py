#!/usr/bin/env python3
"""Prints template.yaml as SAM transforms it: what CloudFormation receives,
for policy-as-code checkers (cfn-guard and the AWS Guard rules registry).
Offline: local CodeUri values are replaced by an S3 location, as
`sam package` would. Needs aws-sam-cli (samtranslator) in the venv."""

import json
import os
import sys

import boto3
from samtranslator.translator.transform import transform
from samtranslator.public.translator import ManagedPolicyLoader
from samtranslator.yaml_helper import yaml_parse

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
path = os.path.join(os.path.dirname(__file__), "..", "template.yaml")
with open(path, encoding="utf-8") as f:
    template = yaml_parse(f.read())
for resource in template["Resources"].values():
    if resource.get("Type") == "AWS::Serverless::Function":
        resource["Properties"]["CodeUri"] = "s3://consent-sync-artifacts/package.zip"


class NoManagedPolicies(ManagedPolicyLoader):
    """The functions name no managed policy: nothing to look up in IAM."""

    def __init__(self):
        pass

    def load(self):
        return {}


# A parameter value for the optional key, so that the KMS properties show.
parameters = dict(arg.split("=", 1) for arg in sys.argv[1:])
transformed = transform(template, parameters, NoManagedPolicies())
json.dump(transformed, sys.stdout, indent=1, default=str)
