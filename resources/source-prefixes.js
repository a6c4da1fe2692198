'use strict';

// The S3 folders users may name in `/table upload s3://...` (serverless.yml param
// `sourcePrefixes`), turned into both the bot's allow-list (TABLEBOT_S3_ALLOWED_PREFIXES) and
// the IAM policy that lets the Slack function read exactly those objects: one list, so the two
// cannot drift. Checked when packaging: an entry that is not `bucket/folder/` would widen the
// policy (`arn:...:s3:::ops*` matches every bucket named ops-something), so it is refused.

const ENTRY = /^([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/((?:[^/*?$\s]+\/)*)$/;

function parse(raw) {
  return String(raw || '')
    .split(',')
    .map((entry) => entry.trim().replace(/^s3:\/\//, ''))
    .filter(Boolean)
    .map((entry) => {
      if (!ENTRY.test(entry)) {
        throw new Error(
          `sourcePrefixes: ${JSON.stringify(entry)} must look like bucket/folder/ (a bucket name, ` +
            'then folders each ending with "/"), e.g. ops-tables/uploads/'
        );
      }
      return entry;
    });
}

function build(raw) {
  const entries = parse(raw);
  const resources = {};
  if (entries.length > 0) {
    resources.SlackSourceReadPolicy = {
      Type: 'AWS::IAM::RolePolicy',
      Properties: {
        RoleName: { Ref: 'SlackRole' },
        PolicyName: 'tablebot-slack-sources',
        PolicyDocument: {
          Version: '2012-10-17',
          Statement: [
            {
              Sid: 'SourceObjects',
              Effect: 'Allow',
              // bot/sources.py: HeadObject and GetObject (with If-Match); both are s3:GetObject.
              Action: 's3:GetObject',
              Resource: entries.map((entry) => ({ 'Fn::Sub': `arn:\${AWS::Partition}:s3:::${entry}*` })),
            },
          ],
        },
      },
    };
  }
  return {
    allowList: entries.map((entry) => `s3://${entry}`).join(','),
    resources: { Resources: resources },
  };
}

module.exports = async ({ resolveVariable }) => build(await resolveVariable('param:sourcePrefixes'));
module.exports.build = build;
