'use strict';

// A customer-managed KMS key for the data at rest, for deployers whose rules require one
// (serverless.yml param `kmsKeyArn`, default empty). Without it everything is still encrypted
// at rest, with keys AWS manages: the log groups and the jobs table with AWS-owned keys, the
// staging bucket with SSE-S3, the dead-letter queue with the AWS-managed key alias/aws/sqs.
// With it, the same key encrypts the three log groups, the jobs table, the staging bucket
// (with an S3 bucket key) and the dead-letter queue, and both functions' roles may use it only
// through those services. The key's policy must let CloudWatch Logs use it
// (docs/security.md, "A customer-managed KMS key").

const KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[0-9a-f-]{36}$/;
const LOG_GROUPS = ['SlackLogGroup', 'PollLogGroup', 'HttpApiLogGroup'];

function parse(raw) {
  const arn = String(raw || '').trim();
  if (arn && !KEY_ARN.test(arn)) {
    throw new Error(
      `kmsKeyArn: ${JSON.stringify(arn)} must be a KMS key ARN, ` +
        'arn:aws:kms:REGION:ACCOUNT:key/KEY-ID (an alias is not accepted: log groups need the key ARN)'
    );
  }
  return arn;
}

function build(raw) {
  const arn = parse(raw);
  const Resources = {};
  const extensions = {};
  if (arn) {
    for (const logGroup of LOG_GROUPS) {
      extensions[logGroup] = { Properties: { KmsKeyId: arn } };
    }
    Resources.JobsTable = {
      Properties: { SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: arn } },
    };
    Resources.StagingBucket = {
      Properties: {
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [
            {
              ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: arn },
              BucketKeyEnabled: true,
            },
          ],
        },
      },
    };
    // The calls the functions make on data under this key go through S3 (staged files),
    // DynamoDB (jobs) and SQS (failed invocations); the key is usable only through them.
    Resources.KmsKeyUsePolicy = {
      Type: 'AWS::IAM::Policy',
      Properties: {
        PolicyName: 'tablebot-kms-key',
        Roles: [{ Ref: 'SlackRole' }, { Ref: 'PollerRole' }],
        PolicyDocument: {
          Version: '2012-10-17',
          Statement: [
            {
              Sid: 'UseTheKeyThroughTheBotsServices',
              Effect: 'Allow',
              Action: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey', 'kms:DescribeKey'],
              Resource: arn,
              Condition: {
                StringEquals: {
                  'kms:ViaService': ['s3', 'dynamodb', 'sqs'].map((service) => ({
                    'Fn::Sub': `${service}.\${AWS::Region}.amazonaws.com`,
                  })),
                },
              },
            },
            {
              // DynamoDB keeps its access to the key with a grant made for the table.
              Sid: 'DynamoDBGrant',
              Effect: 'Allow',
              Action: 'kms:CreateGrant',
              Resource: arn,
              Condition: {
                Bool: { 'kms:GrantIsForAWSResource': 'true' },
                StringEquals: { 'kms:ViaService': { 'Fn::Sub': 'dynamodb.${AWS::Region}.amazonaws.com' } },
              },
            },
          ],
        },
      },
    };
  }
  return {
    arn,
    queueKey: arn || 'alias/aws/sqs',
    resources: { Resources, extensions },
  };
}

module.exports = async ({ resolveVariable }) => build(await resolveVariable('param:kmsKeyArn'));
module.exports.build = build;
