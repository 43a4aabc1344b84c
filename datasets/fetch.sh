#!/usr/bin/env bash
# Download the public traces Aya is tested on from their original homes.
#
#   datasets/fetch.sh [OUTPUT_DIR]        (default: out/datasets)
#   aya datasets fetch --output DIR       (runs this script, then converts WorldCup98)
#
# Needs curl and internet access. Files are pinned to the commits named in
# ../shared/datasets/*/README.md, and the NAB and Azure files are checked against the
# SHA-256 of the copies the tests use (they were copied byte for byte). The layout of
# OUTPUT_DIR mirrors the shared folder, so `aya datasets check OUTPUT_DIR` and
# `AYA_DATASETS=OUTPUT_DIR cargo test -p aya-forecaster` work on it.
#
# WorldCup98: the source file (`invocation_count.csv`, header `period,count`, naive GMT
# timestamps, 10 minutes with no request absent) is saved as
# worldcup98/invocation_count.csv. `aya datasets fetch` then writes
# worldcup98/worldcup98_requests_per_minute.csv (RFC 3339, missing minutes = 0), the
# form of the shared copy. Run standalone, the script leaves that step out.
#
# Licences: NAB MIT (nab/LICENSE.txt), Azure CC-BY 4.0 (cite the Splitwise paper),
# WorldCup98 ITA terms (keep the Copyright and Disclaimer; see the shared README).
set -euo pipefail

OUT="${1:-out/datasets}"
NAB_COMMIT=ea702d75cc2258d9d7dd35ca8e5e2539d71f3140
AZURE_COMMIT=b469a113cedca53ddc3bdea71a143dc4b7d8700c
WC_COMMIT=82460213f0d5a86fa57b6d4b0b5f260e606e713b
NAB="https://raw.githubusercontent.com/numenta/NAB/$NAB_COMMIT"
AZURE="https://raw.githubusercontent.com/Azure/AzurePublicDataset/$AZURE_COMMIT"
WC="https://raw.githubusercontent.com/nimamahmoudi/worldcup98-dataset/$WC_COMMIT"

command -v curl >/dev/null || { echo "fetch.sh: curl is required" >&2; exit 1; }
if command -v sha256sum >/dev/null; then SHA="sha256sum"; elif command -v shasum >/dev/null; then SHA="shasum -a 256"; else SHA=""; fi

# dest (under OUT) | url | sha256 (empty: not checked)
MANIFEST="
nab/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv|$NAB/data/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv|ab446fbd8b9f37507eb2fdb06315826d8daeef02e241133ce06e0ee571ba53d9
nab/realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv|$NAB/data/realAWSCloudwatch/ec2_cpu_utilization_53ea38.csv|8942e498de7b40f1b4a6d802755592c09b8fb73ce8f658763a09cb9ea1ea94ac
nab/realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv|$NAB/data/realAWSCloudwatch/ec2_cpu_utilization_77c1ca.csv|90ceabd570b449241ee24ff8a116a793979b7671ce4490707311bfea0e0aae1f
nab/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv|$NAB/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv|d768419037c9db269343822957314f57ee21a7d9a4d41df2add0d1ba45ba84de
nab/realAWSCloudwatch/ec2_cpu_utilization_c6585a.csv|$NAB/data/realAWSCloudwatch/ec2_cpu_utilization_c6585a.csv|d936cea74682ed43ac96b778352d7de294c0b0c168f4a7e6817162346cdb28c1
nab/realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv|$NAB/data/realAWSCloudwatch/ec2_cpu_utilization_fe7f93.csv|f3433f8171f4dcea86c0c7af9996d0f166f812fa0f4567f1d5cd85d2d2cd69b4
nab/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv|$NAB/data/realAWSCloudwatch/ec2_disk_write_bytes_1ef3de.csv|ce3d6c6a652ed7c31a6dd3727a36e128fcac6fb2381c63267ad0fbc02eccd9df
nab/realAWSCloudwatch/ec2_disk_write_bytes_c0d644.csv|$NAB/data/realAWSCloudwatch/ec2_disk_write_bytes_c0d644.csv|a0e734a66098bb81833835f0839dadafbc8ae829c51494670ee8849e46eb5b63
nab/realAWSCloudwatch/ec2_network_in_257a54.csv|$NAB/data/realAWSCloudwatch/ec2_network_in_257a54.csv|39104b08f2e0a673b5137eb7681897fcadf0955fedf565740a6a94edc63a81a4
nab/realAWSCloudwatch/ec2_network_in_5abac7.csv|$NAB/data/realAWSCloudwatch/ec2_network_in_5abac7.csv|c27ef93f582af63bf42e80d804764cbe64ae987620f3cfab5477d6ebb3c6157e
nab/realAWSCloudwatch/elb_request_count_8c0756.csv|$NAB/data/realAWSCloudwatch/elb_request_count_8c0756.csv|74c26574a01ca9fb89dddb5021e2e13c3a93eb25dc640438a9acb1ceb00f1021
nab/realAWSCloudwatch/grok_asg_anomaly.csv|$NAB/data/realAWSCloudwatch/grok_asg_anomaly.csv|86a0abe9d58e376858d2fd4f4a438f1997e24c64a09e5af03accd4e1b372ac47
nab/realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv|$NAB/data/realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv|f115fbe6542159eed5612445bfa620708a28ab6b41349d1432bb15c3a3b8414d
nab/realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv|$NAB/data/realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv|d5df979ef85928769a016cd0f935919d8c2a113926e21e1eb3a5001d688760e2
nab/realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv|$NAB/data/realAWSCloudwatch/rds_cpu_utilization_e47b3b.csv|6b712b922ab3b3404c5a629d64a570c390c99471ee8b9b0ff7665f553fda92c1
nab/realKnownCause/cpu_utilization_asg_misconfiguration.csv|$NAB/data/realKnownCause/cpu_utilization_asg_misconfiguration.csv|58ba65dc0737cfbac11b51514476d50c438d44011232144bb8d93f392df58f9f
nab/realKnownCause/ec2_request_latency_system_failure.csv|$NAB/data/realKnownCause/ec2_request_latency_system_failure.csv|98378580aa80157e057c61d59d81daddccc6c65a2c0c800e3f01f603b8215c3f
nab/realKnownCause/nyc_taxi.csv|$NAB/data/realKnownCause/nyc_taxi.csv|d8fa6f7f0734bf5c8be12c52a94e20a82664c397d9dec4449156bd453d32856d
nab/realTweets/Twitter_volume_AAPL.csv|$NAB/data/realTweets/Twitter_volume_AAPL.csv|826f5cf404c2890784a7824f7102fd00cb134a4948e12e44ec320d095cbbc217
nab/realTweets/Twitter_volume_AMZN.csv|$NAB/data/realTweets/Twitter_volume_AMZN.csv|234f5e63f19a62720dfb7ccfd6ecc8349b94d93b33ef8aafbdb17edda0b654f3
nab/realTweets/Twitter_volume_CRM.csv|$NAB/data/realTweets/Twitter_volume_CRM.csv|e7133bf26479623d58fc7367107aea1cd7df6020420dece48b0eee4d26cdb28a
nab/realTweets/Twitter_volume_CVS.csv|$NAB/data/realTweets/Twitter_volume_CVS.csv|f0bdc89cba3dd2265b47069187c750eeae18ef48f76f86067ee26ea1af9c3114
nab/realTweets/Twitter_volume_FB.csv|$NAB/data/realTweets/Twitter_volume_FB.csv|a7096bd646759486bda6796b5600cd33a4590f0842bf274ea7acba001b3ba591
nab/realTweets/Twitter_volume_GOOG.csv|$NAB/data/realTweets/Twitter_volume_GOOG.csv|3a39cc23d1ff6a0f234b55298d0c46c21d2e94ddb81a0dad9e1e46e3aaa9ec90
nab/realTweets/Twitter_volume_IBM.csv|$NAB/data/realTweets/Twitter_volume_IBM.csv|4309bd56d28ddcbdc168e207da9717395fa2e9f74dba41fa768e0f7da8a116fa
nab/realTweets/Twitter_volume_KO.csv|$NAB/data/realTweets/Twitter_volume_KO.csv|f3aa8157043c6569911031535bd1f7a73b428b5a2d95238d79b9d5b88ceebbd2
nab/realTweets/Twitter_volume_PFE.csv|$NAB/data/realTweets/Twitter_volume_PFE.csv|18d2804d6a5dae63fe711baaba9242dce38a32bfade3dcdee1d8a7c1a866e41b
nab/realTweets/Twitter_volume_UPS.csv|$NAB/data/realTweets/Twitter_volume_UPS.csv|be50f06bbb9d020f37653c8c5cf19af63f77aa0019d8cf10849d91f4af455af4
nab/artificialNoAnomaly/art_daily_no_noise.csv|$NAB/data/artificialNoAnomaly/art_daily_no_noise.csv|ccb7743ac2de8ca110db4af796d11ba31a23ad448a28e353a935c15f637756bc
nab/artificialNoAnomaly/art_daily_perfect_square_wave.csv|$NAB/data/artificialNoAnomaly/art_daily_perfect_square_wave.csv|662ff0a295b81eb0ff8e81116a54a497cd6f6b07c19c7a5ea72cce494913ce62
nab/artificialNoAnomaly/art_daily_small_noise.csv|$NAB/data/artificialNoAnomaly/art_daily_small_noise.csv|c4b304229f69f108eaa024fb2406fcd4510c5c5d95cd0053e2da6989682e4e6d
nab/artificialNoAnomaly/art_flatline.csv|$NAB/data/artificialNoAnomaly/art_flatline.csv|1cc10761ddd6d55fb5f0d9cfc73610416abbb120ee14bb65eff288509a463397
nab/artificialNoAnomaly/art_noisy.csv|$NAB/data/artificialNoAnomaly/art_noisy.csv|ad455adeaf06852222500955f2aefe6bd389cc762ef68e7102ee543209c8607f
nab/artificialWithAnomaly/art_daily_flatmiddle.csv|$NAB/data/artificialWithAnomaly/art_daily_flatmiddle.csv|ea5df125947e9ee2b977ac3d341f3c2a029588862af97cae4a654fc56e838702
nab/artificialWithAnomaly/art_daily_jumpsdown.csv|$NAB/data/artificialWithAnomaly/art_daily_jumpsdown.csv|4af31802e87dff4b4ba3ceb21714ba9d905f7888e1f53d47cc6dd4f856f9debc
nab/artificialWithAnomaly/art_daily_jumpsup.csv|$NAB/data/artificialWithAnomaly/art_daily_jumpsup.csv|f79f92b93ee4f9c10e2dc552505e8880b0c618639ed5e0f9816e044b75c26456
nab/artificialWithAnomaly/art_daily_nojump.csv|$NAB/data/artificialWithAnomaly/art_daily_nojump.csv|65c85d1834376ed5e622f01721d478609577ea0df0a067c5a5ebe5edea03b077
nab/artificialWithAnomaly/art_increase_spike_density.csv|$NAB/data/artificialWithAnomaly/art_increase_spike_density.csv|0959d8871d5c1a3fc3120fb7421e4ef113fffb434af2889085b52aebdb69360c
nab/artificialWithAnomaly/art_load_balancer_spikes.csv|$NAB/data/artificialWithAnomaly/art_load_balancer_spikes.csv|99f7130e54c7c3e818df8e3bdc0974cd241914bb14a10a9c3fa7c1374125d224
nab/realAdExchange/exchange-2_cpc_results.csv|$NAB/data/realAdExchange/exchange-2_cpc_results.csv|d869ab165254f3ee77ee21fd9fab2be1d07c1f80b8133cf01bbaf2d768c2ac64
nab/realAdExchange/exchange-2_cpm_results.csv|$NAB/data/realAdExchange/exchange-2_cpm_results.csv|1f01b9438566d2fe1ac446faa202a395ac86db9240a1955bc1f118c8eada2a19
nab/realAdExchange/exchange-3_cpc_results.csv|$NAB/data/realAdExchange/exchange-3_cpc_results.csv|e70b24dba107a2589657cb3feb9ca5605b4f3f7de49ff445f32f5991bc0bdbe5
nab/realAdExchange/exchange-3_cpm_results.csv|$NAB/data/realAdExchange/exchange-3_cpm_results.csv|74d354a94fb1730e14b469c7c1c6e99c2ad69af53afdb85f65220bd3cf01ce4a
nab/realAdExchange/exchange-4_cpc_results.csv|$NAB/data/realAdExchange/exchange-4_cpc_results.csv|d4c13abd6f28594dc446f22106562ebe917fdbe76170f60a500c2a402ecc09e2
nab/realAdExchange/exchange-4_cpm_results.csv|$NAB/data/realAdExchange/exchange-4_cpm_results.csv|4e5c955b632145b77b93fba4a5e3bf615d47e00416e17091d64e05ae109c760e
nab/realKnownCause/ambient_temperature_system_failure.csv|$NAB/data/realKnownCause/ambient_temperature_system_failure.csv|230b68ccca20f59d562afd5d24ad52939c9b784386bed0054018358bf9120581
nab/realKnownCause/machine_temperature_system_failure.csv|$NAB/data/realKnownCause/machine_temperature_system_failure.csv|92bf5b87fc7f9bba8ca0b7ec63ccaac8cb4a1371a258e8c29a10ae9c018d82a4
nab/realKnownCause/rogue_agent_key_hold.csv|$NAB/data/realKnownCause/rogue_agent_key_hold.csv|47b110baa8e3636574c1033dda1cce780873647fab58223d159d4fee6f180e86
nab/realKnownCause/rogue_agent_key_updown.csv|$NAB/data/realKnownCause/rogue_agent_key_updown.csv|9797cfef477c13306f7a33874ab4d6cf700f8f2c7e5825a2a5bc02004370909a
nab/realTraffic/TravelTime_387.csv|$NAB/data/realTraffic/TravelTime_387.csv|38e70e9ead8227fd023bff6e93247d5bc01ee008f781b921a156962419b399bb
nab/realTraffic/TravelTime_451.csv|$NAB/data/realTraffic/TravelTime_451.csv|7c174adfc457b201cd111d60688f7ec37eb7201c8080790dc41eeff477bd7345
nab/realTraffic/occupancy_6005.csv|$NAB/data/realTraffic/occupancy_6005.csv|cd357d7820d675074270fd976d4af1fc1e7854ecb764783028cbcb18d980c91d
nab/realTraffic/occupancy_t4013.csv|$NAB/data/realTraffic/occupancy_t4013.csv|5663a8122a300360eb51fbbd0f21706da05af1af55262926d6a226bb6d071704
nab/realTraffic/speed_6005.csv|$NAB/data/realTraffic/speed_6005.csv|7976e7596cd1e579696c737576e96a26fe041484472ed7d0a463ce2b094d7aa7
nab/realTraffic/speed_7578.csv|$NAB/data/realTraffic/speed_7578.csv|15ba994384730cb5a2e6818f17ded1430b40d92eb7a08e5b1a48a445c8c350f6
nab/realTraffic/speed_t4013.csv|$NAB/data/realTraffic/speed_t4013.csv|fa5532d6f7db36cadc73e657fd4dfef05cb1ec44d4010243b314d3f1bbd6a7b5
nab/LICENSE.txt|$NAB/LICENSE.txt|
nab/labels/combined_windows.json|$NAB/labels/combined_windows.json|
azure_llm_inference_2023/AzureLLMInferenceTrace_code.csv|$AZURE/data/AzureLLMInferenceTrace_code.csv|54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6
azure_llm_inference_2023/AzureLLMInferenceTrace_conv.csv|$AZURE/data/AzureLLMInferenceTrace_conv.csv|2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8
azure_llm_inference_2023/LICENSE|$AZURE/LICENSE|
worldcup98/invocation_count.csv|$WC/invocation_count.csv|
"

failed=0
while IFS='|' read -r dest url sha; do
  [ -n "$dest" ] || continue
  target="$OUT/$dest"
  mkdir -p "$(dirname "$target")"
  if [ -s "$target" ] && [ -n "$sha" ] && [ -n "$SHA" ] && [ "$($SHA "$target" | cut -d' ' -f1)" = "$sha" ]; then
    echo "ok (cached)  $dest"
    continue
  fi
  if ! curl --fail --silent --show-error --location --retry 3 --output "$target.part" "$url"; then
    echo "FAILED       $dest  <- $url" >&2
    rm -f "$target.part"
    failed=$((failed + 1))
    continue
  fi
  if [ -n "$sha" ] && [ -n "$SHA" ]; then
    got="$($SHA "$target.part" | cut -d' ' -f1)"
    if [ "$got" != "$sha" ]; then
      echo "CHECKSUM     $dest: got $got, expected $sha" >&2
      rm -f "$target.part"
      failed=$((failed + 1))
      continue
    fi
  fi
  mv "$target.part" "$target"
  echo "downloaded   $dest"
done <<< "$MANIFEST"

if [ "$failed" -ne 0 ]; then
  echo "fetch.sh: $failed file(s) failed; see the messages above" >&2
  exit 1
fi
echo "fetch.sh: all files in $OUT"
